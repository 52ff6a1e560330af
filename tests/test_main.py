"""The app's start-up (``app.main.create_app``'s lifespan) beyond what every API test covers."""

from __future__ import annotations

import gc

from tests.harness import running_app, settings_for_tests


async def test_a_started_app_freezes_its_heap_out_of_the_cyclic_collector(
    postgres_url: str,
) -> None:
    gc.unfreeze()
    try:
        async with running_app(settings_for_tests(postgres_url)):
            assert gc.get_freeze_count() == 0  # off: the suite starts many apps
        settings = settings_for_tests(postgres_url, gc_freeze_after_startup=True)
        async with running_app(settings):
            # Everything alive once started (modules, the app, its services) is frozen.
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()  # back into the oldest generation: this process keeps collecting
