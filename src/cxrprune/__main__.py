import sys

from cxrprune.cli import main

sys.exit(main())
