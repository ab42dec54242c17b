"""The vocabulary every process of the lab shares: typed event records,
logging, entering a namespace, durations, the rule and close-policy
grammars, the control protocol, and reading the kernel's tracepoints.

Layers (checked by ``lint-imports``): the lab (:mod:`tcplab`) above the
daemons (:mod:`daemons`) and the proxy (:mod:`proxy`), which never import
each other; all three above this package, which imports none of them.
"""
