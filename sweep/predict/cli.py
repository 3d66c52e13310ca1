"""`bench.py predict`: a config's step time, tokens/s and run time (and cost) from the model fitted on the store, on
its nodes or on a host known by its fingerprint file; `--validate` checks the model on the store's own configs.

Only the parser is imported at start-up; the command imports the model when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def add_predict_parser(commands, store: argparse.ArgumentParser) -> None:
    predict = commands.add_parser(
        "predict",
        parents=[store],
        help="predict a config's step time, tokens/s and run time (and cost) from a model fitted on the store; "
        "--validate: how well it predicts configs it did not see",
    )
    predict.add_argument("assignments", nargs="*", metavar="key=value", help="config keys, e.g. width=512 depth=8")
    target = predict.add_mutually_exclusive_group()
    target.add_argument("--node", help="a node of the store (hostname, IP or compare's label); default: every node")
    target.add_argument(
        "--fingerprint",
        metavar="FILE",
        help="predict for another host from what `bench.py hw --json` printed there (its peaks and bandwidth), with "
        "the efficiencies fitted on every node of the store",
    )
    size = predict.add_mutually_exclusive_group()
    size.add_argument("--steps", type=int, metavar="N", help="the run's optimizer steps (default 10,000)")
    size.add_argument("--tokens", type=float, metavar="N", help="the run's token budget, e.g. 1e9")
    predict.add_argument("--price-per-hour", type=float, metavar="P", help="price of a node-hour, for every node")
    predict.add_argument(
        "--cluster",
        default=str(CLUSTER_YAML),
        metavar="FILE",
        help="a cluster.yaml whose ray start lines carry --labels=bench-price-per-hour=P (default: the repository's)",
    )
    predict.add_argument(
        "--validate", action="store_true", help="leave-one-config-out and the ISA-cap and core-count cross checks"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object")
    predict.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    import json

    from sweep.predict.features import PredictError
    from sweep.predict.fit import store_points
    from sweep.results.comparison import load_rows
    from sweep.results.store import Store

    if args.validate and (args.assignments or args.fingerprint):
        raise PredictError("--validate checks the model on the store's own configs: give no key=value or --fingerprint")
    store = store_points(load_rows(Store(args.result_dir)))
    if args.validate:
        document, text = validation_output(store)
    else:
        document, text = prediction_output(store, args)
    print(json.dumps(document, indent=1, default=str) if args.json else text)
    return 0


def validation_output(store) -> tuple[dict, str]:
    from sweep.predict.validate import check_json, check_lines, validate

    checks = validate(store)
    lines = [line for check in checks for line in [*check_lines(check), ""]]
    left = {node: n for node, n in store.disturbed.items() if n}
    if left:
        lines.append(
            "left out as disturbed (other work took over 10% of their threads' CPU time during the measured steps): "
            + ", ".join(f"{node} {n} ok rows" for node, n in left.items())
        )
    lines += [f"left out: {reason}" for reason in store.skipped]
    document = {"checks": [check_json(c) for c in checks], "disturbed_rows": store.disturbed, "skipped": store.skipped}
    return document, "\n".join(lines).rstrip()


def _targets(store, args) -> list[tuple]:
    """(roofs, points to fit, where, aliases) per host to predict for."""
    from sweep.predict.features import PredictError
    from sweep.predict.roofs import fingerprint_roofs, read_fingerprint

    every = [p for points in store.points.values() for p in points]
    if args.fingerprint:
        roofs = fingerprint_roofs(read_fingerprint(Path(args.fingerprint)), args.fingerprint)
        nodes = ", ".join(store.points) or "none"
        return [(roofs, every, f"on the store's nodes ({nodes})", {roofs.node})]
    nodes = list(store.points)
    if args.node:
        nodes = [n for n in nodes if args.node in store.aliases[n]]
        if not nodes:
            known = "; ".join(f"{n} = {', '.join(sorted(store.aliases[n] - {n}))}" for n in store.points)
            raise PredictError(f"--node={args.node}: no such node in the store (known: {known})")
    return [(store.roofs[n], store.points[n], f"on {n}", store.aliases[n]) for n in nodes]


def prediction_output(store, args) -> tuple[dict, str]:
    from sweep.predict.cost import cluster_prices, cost_per_token, node_price, run_cost
    from sweep.predict.features import PredictError, config_from_values
    from sweep.predict.model import predict_step
    from trainables.config import parse_assignments

    cfg = config_from_values(parse_assignments(args.assignments))
    prices = {} if args.price_per_hour is not None else cluster_prices(Path(args.cluster))
    records, refused = [], {}
    for roofs, points, where, aliases in _targets(store, args):
        try:
            prediction = predict_step(cfg, points, roofs, where)
        except PredictError as exc:
            refused[roofs.node] = str(exc)
            continue
        price = node_price(aliases, args.price_per_hour, prices, Path(args.cluster))
        step, tokens = prediction.step_time_s, cfg.tokens_per_step
        run = run_cost(step, tokens, steps=args.steps, tokens=args.tokens, price=price)
        record = prediction_record(prediction, run, run_cost(step, tokens, price=price))
        record["cost_per_token"] = cost_per_token(step, tokens, price[0]) if price else None
        records.append(record)
    if not records:
        raise PredictError("; ".join(refused.values()) if len(refused) == 1 else _refusals(refused))
    records.sort(key=lambda r: -r["fitted_on"]["rows"])
    priced = [r for r in records if r["cost_per_token"] is not None]
    cheapest = min(priced, key=lambda r: r["cost_per_token"])["node"] if priced else None
    fastest = max(records, key=lambda r: r["tokens_per_s"])["node"]
    document = records[0] | {
        "per_node": records,
        "refused": refused,
        "cheapest_per_token": cheapest,
        "fastest_per_token": fastest,
    }
    return document, prediction_text(records, refused, cheapest, fastest)


def _refusals(refused: dict[str, str]) -> str:
    return "no node can predict it: " + "; ".join(f"{node}: {why}" for node, why in refused.items())


def prediction_record(prediction, run, run_10k) -> dict:
    fit = prediction.fit
    return {
        "node": prediction.node,
        "predicted_step_time_s": prediction.step_time_s,
        "interval_low_s": prediction.low_s,
        "interval_high_s": prediction.high_s,
        "interval_configs": prediction.interval_configs,
        "tokens_per_step": prediction.cfg.tokens_per_step,
        "tokens_per_s": prediction.tokens_per_s,
        "threads": prediction.threads,
        "dtype": prediction.dtype,
        "roofs": {
            "matmul_gflops": prediction.roofs.matmul_gflops,
            "bandwidth_gbs": prediction.roofs.bandwidth_gbs,
            "source": prediction.roofs.source,
        },
        "seconds_per_class": prediction.breakdown,
        "efficiencies": {c: e for c, e in fit.efficiencies().items() if c != "layer"},  # None: the class got no time
        "layer_pass_s": fit.efficiencies()["layer"],
        "fitted_on": {
            "framework": prediction.cfg.framework,
            "precision": prediction.cfg.precision,
            "nodes": fit.nodes,
            "sweeps": fit.sweeps,
            "configs": len(fit.points),
            "rows": fit.rows,
        },
        "run": _run(run),
        "run_10k_steps": _run(run_10k),
    }


def _run(run) -> dict:
    return {
        "steps": run.steps,
        "tokens": run.tokens,
        "seconds": run.seconds,
        "price_per_hour": run.price_per_hour,
        "price_source": run.price_source,
        "cost": run.cost,
    }


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}" if value >= 0.01 else f"{value:.2g}"


def prediction_text(records: list[dict], refused: dict[str, str], cheapest: str | None, fastest: str) -> str:
    from sweep.predict.features import CLASSES
    from sweep.results.report_tables import duration

    lines = []
    for r in records:
        interval = (
            f" (90% interval {r['interval_low_s'] * 1e3:.1f}–{r['interval_high_s'] * 1e3:.1f} ms, from "
            f"{r['interval_configs']} held-out configs)"
            if r["interval_low_s"] is not None
            else " (no interval: too few configs to hold out)"
        )
        fitted = r["fitted_on"]
        efficiencies = r["efficiencies"]
        shares = ", ".join(
            f"{c} {r['seconds_per_class'][c] * 1e3:.1f} ms"
            + (f" ({efficiencies[c]:.0%} of roof)" if efficiencies.get(c) else "")
            for c in CLASSES
        )
        lines += [
            f"{r['node']}: predicted step time {r['predicted_step_time_s'] * 1e3:.1f} ms{interval}, "
            f"{r['tokens_per_s']:,.0f} tokens/s ({r['tokens_per_step']:,} tokens per step, {r['threads']} threads)",
            f"  per class: {shares}",
            f"  roofs: {r['roofs']['source']}",
            f"  fitted on {fitted['configs']} configs ({fitted['rows']} ok rows) of framework={fitted['framework']} "
            f"precision={fitted['precision']} on {', '.join(fitted['nodes'])}; sweeps {', '.join(fitted['sweeps'])}",
        ]
        for key in ("run_10k_steps", "run") if r["run"]["steps"] != r["run_10k_steps"]["steps"] else ("run",):
            run = r[key]
            cost = (
                f", {_money(run['cost'])} at {run['price_per_hour']:g}/h ({run['price_source']})"
                if run["cost"] is not None
                else ""
            )
            lines.append(f"  {run['steps']:,.0f} steps = {run['tokens']:,.0f} tokens: {duration(run['seconds'])}{cost}")
    lines += [f"{node}: refused: {why}" for node, why in refused.items()]
    if len(records) > 1:
        lines.append(f"fastest per token: {fastest}")
        lines.append(
            f"cheapest per token: {cheapest}"
            if cheapest
            else "cheapest per token: no price (--price-per-hour, or a bench-price-per-hour label in cluster.yaml)"
        )
    return "\n".join(lines)
