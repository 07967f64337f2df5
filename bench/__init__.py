"""hvlib's benchmarks (``make bench``, ``python -m bench``): hvlib side by side with raw
libvirt-python, O(1) inventory, parallel provisioning, waits, memory and import cost.

- :mod:`bench.stats`: the arithmetic (medians, percentiles, ratios, verdicts, the table);
- :mod:`bench.sandboxed`: rows on a sandboxed libvirtd with the test guest kit;
- :mod:`bench.testdriver`: rows on libvirt's in-process ``test:///`` driver;
- :mod:`bench.child`: rows that need a process of their own;
- :mod:`bench.run`: the run and its report.

Needs root for the sandboxed rows (they say so when it is missing). Only this package and
``hvlib/_virt.py`` import libvirt: here for the raw baselines.
"""
