"""Run both provider simulators for humans: ``python -m appt_pipeline.sandbox [--ghl-port N] ...``.

Starts the GHL and Calendly simulators on 127.0.0.1 with a small built-in seed, prints the base
URLs, tokens and ids to use, and serves until Ctrl-C. ``/_admin/state`` on either port shows the
data; ``/_admin/book`` etc. change it.
"""

from __future__ import annotations

import argparse
import signal
import threading

from appt_pipeline.sandbox.calendly import CalendlySimulator
from appt_pipeline.sandbox.ghl import GhlSimulator
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.sandbox.state import sample_calendly_seed, sample_ghl_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appt_pipeline.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--ghl-port", type=int, default=8701, help="GHL simulator port (0 = any free port)")
    parser.add_argument("--calendly-port", type=int, default=8702, help="Calendly simulator port (0 = any)")
    parser.add_argument("--leads", type=int, default=20, help="contacts / invitees in the built-in seed")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated data and ids")
    parser.add_argument("--ghl-rate-limit", type=int, default=100, help="GHL requests per window per location")
    parser.add_argument("--ghl-window", type=int, default=10, help="GHL rate-limit window, seconds")
    parser.add_argument("--calendly-rate-limit", type=int, default=500, help="Calendly requests/min per user")
    args = parser.parse_args(argv)

    ghl = GhlSimulator(
        sample_ghl_seed(args.leads, seed=args.seed),
        rate_limit=args.ghl_rate_limit,
        rate_window_seconds=args.ghl_window,
        id_seed=args.seed,
    )
    calendly = CalendlySimulator(
        sample_calendly_seed(args.leads, seed=args.seed), rate_limit=args.calendly_rate_limit, id_seed=args.seed
    )
    ghl_server = SimulatorServer(ghl, args.host, args.ghl_port, log_level="info").start()
    calendly_server = SimulatorServer(calendly, args.host, args.calendly_port, log_level="info").start()
    try:
        loc = ghl.snapshot()["locations"][0]
        user = calendly.snapshot()["users"][0]
        print(f"GHL       {ghl_server.base_url}  token pit-demo-location-1  location {loc['id']}")
        print(f"          calendars {', '.join(c['id'] for c in loc['calendars'])}  (send header Version: 2021-04-15)")
        print(f"Calendly  {calendly_server.base_url}  token calendly-demo-token-1  user {user['uri']}")
        print(f"          organization {user['current_organization']}")
        print(f"          event types {', '.join(t['uri'] for t in user['event_types'])}")
        print("Admin: GET /_admin/state, POST /_admin/book, PUT /_admin/faults … on either port. Ctrl-C stops.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        ghl_server.stop()
        calendly_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
