"""Session fixtures for the container tests: the image is built once, with the README's own command."""

from __future__ import annotations

import pytest

from tests.support.podman import (
    BUILD_TIMEOUT,
    POSTROOM_TEST_IMAGE,
    adapt,
    build_test_options,
    ensure_base_image,
    readme_podman_commands,
    require_podman,
    run_command,
)


@pytest.fixture(scope="session")
def podman_base_image() -> str:
    require_podman()
    return ensure_base_image()


@pytest.fixture(scope="session")
def postroom_image(podman_base_image: str) -> str:
    """Postroom's image from this checkout, built by the README's `podman build` line (suite tag)."""
    build = adapt(readme_podman_commands()["build"], {"postroom:local": POSTROOM_TEST_IMAGE})
    context = build.pop()
    run_command([*build, *build_test_options(podman_base_image), context], timeout=BUILD_TIMEOUT)
    return POSTROOM_TEST_IMAGE
