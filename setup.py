"""Only the package index description is computed here; everything else is in pyproject.toml.

The README links to files of the repository (``docs/cache.md``). The package index page has no
repository beside it and lean-plugins has no public URL yet, so there a relative link would
lead nowhere: the index description names the file instead, as a path in the source
distribution, which ships ``docs/`` and ``examples/`` (see MANIFEST.in).
"""

import re
from pathlib import Path

from setuptools import setup

# [text](target) and ![alt](target) whose target is not a URL, a mail address or an anchor.
RELATIVE_LINK = re.compile(r"!?\[([^\]]*)\]\((?!https?://|mailto:|#)([^)\s]+)\)")


def index_description(readme: str) -> str:
    """The README with each relative link written as its text and the file it points to."""
    return RELATIVE_LINK.sub(lambda m: f"{m.group(1)} (`{m.group(2)}` in the source distribution)", readme)


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import index_description
    setup(
        long_description=index_description(Path(__file__).with_name("README.md").read_text(encoding="utf-8")),
        long_description_content_type="text/markdown",
    )
