"""A PyDataset read by worker processes trains every epoch, and its workers' signals do not stop the run.

Moved from test_keras_shaped.py (issue 22 item 8: a PyDataset trains as in Keras).
"""

from __future__ import annotations

PYDATASET_WORKERS = """
import sys, keras, numpy as np, kexp
x = np.random.default_rng(0).normal(size=(96, 4)).astype("float32")
class Batches(keras.utils.PyDataset):
    def __len__(self):
        return 3
    def __getitem__(self, index):
        return x[index * 32:(index + 1) * 32], x[index * 32:(index + 1) * 32, :1]
with kexp.open_run("workers", logdir=sys.argv[1], train=kexp.TrainConfig(epochs=3), verbose=0) as run:
    run.fit(lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]),
            Batches(workers=2, use_multiprocessing=True), loss="mse")
print(run.results["status"], run.results["fits"]["model"]["input"]["counted"])
"""


def test_a_pydataset_read_by_worker_processes_trains_every_epoch(logdir):
    # Keras ends each epoch of a PyDataset itself: given its length as steps_per_epoch, the
    # multiprocessing reader waited forever after the first epoch.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PYDATASET_WORKERS, str(logdir)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "ok in worker processes: not seen by the harness"


def test_a_signal_a_forked_worker_writes_to_the_inherited_wakeup_socket_does_not_stop_the_run():
    """A PyDataset worker SIGTERMed before its at-fork hook ran wrote its signal to the parent's watcher.

    Seen once in the suite: the test above ended `interrupted` (SIGTERM) right after its fit, when Keras
    ends the worker pool it had just started for a next epoch. The child here writes the byte CPython's
    signal handler would write there, on a copy of the socket taken before the fork.
    """
    import os
    import signal
    import time

    from kexp.engine.interrupt import StopRequest

    with StopRequest() as stop:
        wakeup = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
        copy = os.dup(wakeup)
        child = os.fork()
        if child == 0:
            os.write(copy, bytes([signal.SIGTERM]))
            os._exit(0)
        os.close(copy)
        assert os.waitpid(child, 0)[1] == 0
        time.sleep(0.5)
        assert stop.signum is None  # the worker's signal, not this process's
        signal.raise_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while stop.signum is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.signum == signal.SIGTERM  # this process's own signal still stops the run
    assert not stop._thread.is_alive()
