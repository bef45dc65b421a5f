"""exec_clean.py CMD ARGS...: close every inherited descriptor above 2, then
exec CMD in this process (same PID).

A compute powered on by its BMC is started from ipmi_sim's chassis_control
script and would otherwise inherit ipmi_sim's UDP socket and pipes, keeping
the BMC's port bound after the BMC is gone.
"""
import os
import sys

os.closerange(3, os.sysconf("SC_OPEN_MAX"))
os.execvp(sys.argv[1], sys.argv[1:])
