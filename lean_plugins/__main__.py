import sys

from lean_plugins.cli import main

sys.exit(main())
