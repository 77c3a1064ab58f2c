"""Real servers the integration tests start on loopback, exposed as pytest fixtures."""
