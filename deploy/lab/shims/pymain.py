"""Run a console entry point of a Debian library package.

python3-nova, python3-placement and python3-glance ship no daemon scripts
(those live in packages that pull libvirt, uwsgi and debconf), so the lab
starts each daemon as ``python3 pymain.py module:function NAME ARGS...``.
"""
import importlib
import sys


def main():
    target, name = sys.argv[1], sys.argv[2]
    module, func = target.split(":")
    sys.argv = [name] + sys.argv[3:]
    sys.exit(getattr(importlib.import_module(module), func)())


if __name__ == "__main__":
    main()
