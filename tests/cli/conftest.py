"""The CLI tests give each command its terminal width (``COLUMNS`` in CliRunner's environment).

rich fixes a console's width when it is made if ``COLUMNS`` is set then, and fuzzconv.cli makes
its consoles on import: a width inherited from the shell that runs pytest would override every
test's. So it is dropped before any test module imports the CLI.
"""

import os

os.environ.pop("COLUMNS", None)
