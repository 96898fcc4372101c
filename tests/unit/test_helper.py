"""The helper process: forked while the service has no other thread, spawned otherwise."""

import subprocess
import sys
import textwrap

import pytest

from kim.helper import has_second_cpu

pytestmark = pytest.mark.skipif(not has_second_cpu(), reason="a helper needs a second CPU")

# Run in a fresh interpreter: pytest's own process may have threads of earlier tests.
_PROBE = textwrap.dedent("""
    import os, signal, socket, sys, threading
    import kim.helper

    def probe():
        # A forked copy shares this module's state of the moment; a spawned one imports it afresh.
        own_signals = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and signal.set_wakeup_fd(-1) == -1
        return getattr(kim.helper, "_probe", None), own_signals

    if __name__ == "__main__":
        signal.signal(signal.SIGTERM, lambda *_: None)  # as uvicorn's handler would be
        wakeup = socket.socketpair()  # as an event loop's
        wakeup[1].setblocking(False)
        signal.set_wakeup_fd(wakeup[1].fileno())
        kim.helper._probe = "set before the helper started"
        if sys.argv[1] == "thread":
            threading.Thread(target=threading.Event().wait, daemon=True).start()
        helper = kim.helper.helper_process(fork=True)
        print(helper.submit(probe).result(timeout=30))
        helper.shutdown()
""")


@pytest.mark.parametrize(("threads", "copied"), [("none", True), ("thread", False)])
def test_helper_is_forked_only_without_other_threads(tmp_path, threads, copied):
    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    result = subprocess.run([sys.executable, str(script), threads], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = ("'set before the helper started'" if copied else "None") + ", True"
    assert result.stdout.strip() == f"({expected})"
