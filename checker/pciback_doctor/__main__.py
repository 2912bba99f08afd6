import sys

from pciback_doctor.cli import main

sys.exit(main())
