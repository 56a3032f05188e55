"""Quality of served variants: the task suite, the CPU kind, the precision gate."""
