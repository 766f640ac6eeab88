"""`bmx7-wg run`: the run loop, what it waits on, sd_notify, and logging."""
