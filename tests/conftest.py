import helpers  # noqa: F401  (registers ansible.module_utils.accel_parsers for the module tests)
