import sys

from rlad.cli.main import main

sys.exit(main())
