"""results: the cost of storing a job's return value on its run (jobrunner).

One job per variant, each a fresh database of `size` runs (bulk) drained by one worker,
measured as `throughput` measures a drain (runs/s in database time, worker CPU per run), at
each of `concurrencies`:
- none: the job returns None (nothing is encoded or stored);
- small: it returns a 3-key dict (about 40 bytes of JSON);
- kb: it returns about 1 KB of JSON.
Every variant gets the same kwargs; only the return value differs. The variants take turns
within each repeat, in an order that alternates between repeats, so that the machine's noise
hits them alike; the table's ratios are of the medians, paired ratios per repeat are kept.
The cost of checking kwargs on enqueue is `python -m bench.enqueue_check`.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report import Result
from bench.scenarios import Context, queues

VARIANTS = {
    "none": "bench.jobs:tenant_noop",
    "small": "bench.jobs:small_result",
    "kb": "bench.jobs:kb_result",
}


def run(
    ctx: Context,
    size: int = 20_000,
    tenants: int = 100,
    concurrencies: Sequence[int] | None = None,
) -> Result:
    concs = tuple(concurrencies or ((ctx.concurrency,) if ctx.concurrency else (16, 200)))
    result = Result(
        "results",
        {"runs per drain": size, "concurrencies": list(concs), "repeats": ctx.repeats},
        [m for m in queues.metrics(0, concs) if not m.key.startswith("urgent")],
        ratio_to="none",
    )
    kwargs = [{"tenant": f"t{i:03d}"} for i in range(tenants)]
    for r in range(ctx.repeats):
        order = list(VARIANTS.items())
        for c in concs:
            rates = {}
            for variant, func in order if r % 2 == 0 else order[::-1]:
                job = {"name": variant, "func": func}
                rates[variant] = queues.drain(
                    ctx, result, variant, job, kwargs, size, r, c, scenario="results"
                )
            paired = {v: queues.ratio(x, rates["none"]) for v, x in rates.items() if v != "none"}
            result.extra.setdefault("paired_ratios", {}).setdefault(f"c{c}", []).append(paired)
            ctx.say(
                f"  r{r} c{c} runs/s against none: "
                + ", ".join(f"{v} {queues.times(x)}" for v, x in paired.items())
            )
    return result
