"""The command line, and the only code that prints: options in, lines of text and exit codes out."""
