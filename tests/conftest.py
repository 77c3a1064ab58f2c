pytest_plugins = [
    "tests.servers.dns",
    "tests.servers.rspamd",
    "tests.servers.clamd",
    "tests.servers.redis",
    "tests.outbound.submission_fixtures",
    "tests.outbound.delivery_fixtures",
    "tests.support.helpdesk",
]
