"""Run a hunt on fake steps in its own process: `python fake_hunt.py STORE SEED MAX_EVALS [RESUME]`.

The fault-tolerance tests kill this process with SIGKILL mid-campaign and run two at once.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fuzzconv.campaign import HuntConfig
from fuzzconv.engine import Hunt  # noqa: E402
from fuzzconv.launch import _sigterm_as_interrupt  # noqa: E402
from fuzzconv.store import Store  # noqa: E402
from tests.unit.fakes import FakeCorpus, FakeExecutor, has  # noqa: E402


def main() -> None:
    store, seed, max_evals = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    resume = sys.argv[4] if len(sys.argv) > 4 else None
    ex = FakeExecutor(flip_faults=[has("fake.pass", name="b")], seconds_per_eval=0.05)
    with Store(Path(store)) as db:
        h = Hunt(ex, db, HuntConfig(model="tiny_keras", seed=seed, budget_s=600,
                                    max_evals=max_evals, localize=False), FakeCorpus())
        with _sigterm_as_interrupt():  # as `fuzzconv hunt` runs it
            r = h.run(resume=resume)
    print(r.campaign, r.evaluations, r.stopped, " ".join(ex.calls), flush=True)


if __name__ == "__main__":
    main()
