"""The systems Postroom is compared with: Postfix + pipe script, a do-nothing aiosmtpd, smtp-sink."""
