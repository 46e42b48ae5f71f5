"""Run both provider simulators for humans: ``python -m appt_pipeline.sandbox [--ghl-port N] ...``.

Starts the GHL and Calendly simulators on 127.0.0.1 with a small built-in seed, prints the base
URLs, tokens and ids to use, and serves until Ctrl-C. ``/_admin/state`` on either port shows the
data; ``/_admin/book`` etc. change it.

Signed webhooks: ``--ghl-webhook-url http://127.0.0.1:8000/webhooks/ghl/<workspace_id>`` (``{locationId}``
is replaced by the location id) and ``--calendly-webhook-url http://127.0.0.1:8000/webhooks/calendly/<id>``
make every change POST a signed webhook there; the public keys / signing key to store as workspace
secrets are printed (and served at ``GET /_admin/webhooks/public_keys`` resp.
``GET /_admin/webhooks/subscriptions``). ``GET /_admin/webhooks/deliveries`` shows what was sent.
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
    parser.add_argument("--ghl-webhook-url", help="POST signed GHL webhooks here ({locationId} is replaced)")
    parser.add_argument("--ghl-legacy-rsa", action="store_true", help="also sign GHL webhooks with x-wh-signature")
    parser.add_argument("--calendly-webhook-url", help="create an organization webhook subscription to this URL")
    parser.add_argument("--calendly-signing-key", help="signing key of that subscription (default: generated)")
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
        if args.ghl_webhook_url:
            ghl.set_webhooks(args.ghl_webhook_url, legacy_rsa=args.ghl_legacy_rsa)
            keys = ghl.webhook_public_keys()
            print(f"GHL webhooks → {args.ghl_webhook_url}")
            print(f"          secret ghl_webhook_public_key        {keys['ghl_webhook_public_key']}")
            if args.ghl_legacy_rsa:
                print(f"          secret ghl_webhook_legacy_public_key {keys['ghl_webhook_legacy_public_key']}")
        if args.calendly_webhook_url:
            sub = calendly.create_webhook_subscription(
                args.calendly_webhook_url,
                organization=user["current_organization"],
                signing_key=args.calendly_signing_key,
            )
            print(f"Calendly webhooks → {args.calendly_webhook_url}  ({sub['uri']})")
            print(f"          secret calendly_webhook_signing_key {sub['signing_key']}")
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
