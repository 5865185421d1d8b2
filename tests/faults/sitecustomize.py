"""Start-up hook of processes that tests start with this folder on PYTHONPATH: installs their faults."""

import autovid_faults

autovid_faults.install()
