import helpers  # noqa: F401  (puts the collection inferfleet.fleet on sys.path for the module tests)
