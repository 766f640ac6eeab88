"""Reading and validating the configuration file."""
