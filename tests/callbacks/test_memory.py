import gc

from pipeline.callbacks.memory import FrozenSetup


def test_objects_alive_at_the_start_are_frozen_for_the_training_and_given_back():
    kept = [object() for _ in range(10)]
    callback = FrozenSetup()
    callback.on_train_start(None, None)
    try:
        assert gc.get_freeze_count() >= len(kept)
        cycle = []
        cycle.append(cycle)  # made during training: still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        callback.on_train_end(None, None)
    assert gc.get_freeze_count() == 0


def test_an_exception_gives_them_back_too():
    callback = FrozenSetup()
    callback.on_train_start(None, None)
    callback.on_exception(None, None, RuntimeError("stop"))
    assert gc.get_freeze_count() == 0
