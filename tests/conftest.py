pytest_plugins = ["tests.servers.dns"]
