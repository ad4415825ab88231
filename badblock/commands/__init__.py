"""One module per subcommand; each stays thin over library functions."""
