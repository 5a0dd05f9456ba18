#!/usr/bin/env python3
"""The HTTP and JSON side of deploy/compose-smoke.sh (the shell script drives docker).

Every subcommand prints one line of what it saw and exits non-zero, with the reason,
when what it checks does not hold. Standard library only (the host's python3).

  checks.py alerts SIM_URL INBOX_URL TIMEOUT
        wait until every forward in the simulator's truth (tenants with an active GDAP
        relationship) has a `new` alert at the webhook receiver; print the number
  checks.py pick SIM_URL INBOX_URL SIGNAL [EXCLUDE_FINGERPRINT]
        print `fingerprint tenant mailbox target rule_id approve_url remove_url` of one
        `new` alert of SIGNAL whose forward is in the truth with one plain, readable
        outside target
  checks.py act URL ACTION EXPECTED_TITLE
        GET the link (the confirmation page), then POST confirm=ACTION to it as the
        page's button does; the answer must show EXPECTED_TITLE
  checks.py console LINK OPERATOR
        a one-time console sign-in link (`fwdwatch console-link`): the GET sets no
        cookie, the POST (from the console's origin) starts a session whose console page
        names OPERATOR, and a second POST is refused (410)
  checks.py truth-without SIM_URL TENANT MAILBOX SIGNAL
        the truth no longer holds that forward (a verified remove)
  checks.py compose-ready PS_JSON SERVICE…
        `docker compose ps -a --format json` output: every SERVICE has a container, the
        one-shot ones (setup, first-scan) exited 0, the others run and are healthy;
        exit 3 while something is still starting
  checks.py rabbit tap QUEUE EXCHANGE ROUTING_KEY | busy-scanner RABBITMQCTL_JSON IPS… |
                   summaries QUEUE RUN_ID COUNT TIMEOUT | queue-idle QUEUE |
                   put-marker QUEUE TEXT | get-marker QUEUE TEXT
        RabbitMQ management API at $SMOKE_RABBITMQ_URL, user $SMOKE_RABBITMQ_USER,
        password $SMOKE_RABBITMQ_PASSWORD (environment, never arguments); busy-scanner
        reads rabbitmqctl's listing from a file instead
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"checks: {message}", file=sys.stderr)
    sys.exit(1)


def get_json(url: str, headers: dict | None = None, data: bytes | None = None, method: str | None = None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


# ---------------------------------------------------------------------------------------
# Alerts against the simulator's truth


def active_tenants(sim: str) -> set[str]:
    return {t["tenant_id"] for t in get_json(f"{sim}/_sim/tenants") if t.get("gdap_active")}


def truth_forwards(sim: str) -> list[dict]:
    tenants = active_tenants(sim)
    return [e for e in get_json(f"{sim}/_sim/truth") if e["tenant_id"] in tenants and e.get("targets")]


def forward_key(tenant: str, mailbox: str | None, signal: str, rule_id: str | None) -> tuple:
    return (tenant, (mailbox or "").lower(), signal, rule_id or "")


def alert_key(alert: dict) -> tuple:
    return forward_key(alert["TenantId"], alert.get("PrimarySmtpAddress"), alert.get("signal") or "", alert.get("rule_id"))


def new_alerts(inbox: str) -> list[dict]:
    state = get_json(f"{inbox}/alerts")
    if state["bad_signatures"]:
        fail(f"the webhook receiver refused {state['bad_signatures']} request(s) with a bad X-Fwdwatch-Signature")
    return [a for a in state["received"] if a.get("alert") == "new"]


def cmd_alerts(sim: str, inbox: str, timeout: str) -> None:
    truth = truth_forwards(sim)
    want = {forward_key(e["tenant_id"], e.get("mailbox"), e["signal"], e.get("rule_id")) for e in truth}
    if not want:
        fail("the simulator's truth holds no forward: nothing to prove")
    deadline = time.monotonic() + float(timeout)
    while True:
        alerts = new_alerts(inbox)
        got = {alert_key(a) for a in alerts}
        missing = want - got
        if not missing:
            tenants = {k[0] for k in want}
            print(f"{len(want)} forwards in {len(tenants)} tenants, each with a signed `new` alert ({len(alerts)} received)")
            return
        if time.monotonic() > deadline:
            sample = "; ".join(" ".join(x for x in k if x) for k in sorted(missing)[:5])
            fail(f"{len(missing)} of {len(want)} forwards have no `new` alert after {timeout}s, e.g. {sample}")
        time.sleep(2)


def cmd_pick(sim: str, inbox: str, signal: str, exclude: str = "") -> None:
    by_key = {forward_key(e["tenant_id"], e.get("mailbox"), e["signal"], e.get("rule_id")): e for e in truth_forwards(sim)}
    for alert in new_alerts(inbox):
        entry = by_key.get(alert_key(alert))
        actions = alert.get("actions") or []
        if (
            alert.get("signal") == signal
            and alert.get("fingerprint") != exclude
            and entry is not None
            and len(entry["targets"]) == 1
            and entry.get("in_effect", True)
            and not entry.get("unreadable")
            # A plain outside address, not one reached through a group or a guest.
            and all(not path.get("via") for path in entry.get("paths") or [])
            and len(actions) == 1
        ):
            fields = [
                alert["fingerprint"], alert["TenantId"], alert.get("PrimarySmtpAddress") or "-",
                actions[0]["target"], alert.get("rule_id") or "-", actions[0]["approve_url"], actions[0]["remove_url"],
            ]
            if any(not f or " " in f for f in fields):
                continue
            print(" ".join(fields))
            return
    fail(f"no `new` alert of signal {signal} with exactly one target in effect")


def cmd_act(url: str, action: str, expected_title: str) -> None:
    # The confirmation page first (a GET never acts), as a browser would.
    with urllib.request.urlopen(url, timeout=30) as response:
        page = response.read().decode("utf-8", "replace")
    if f'value="{action}"' not in page:
        fail(f"the confirmation page of the {action} link has no {action} button")
    body = urllib.parse.urlencode({"confirm": action, "reason": "compose smoke test"}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, page = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        status, page = error.code, error.read().decode("utf-8", "replace")
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    title = html.unescape(title.group(1)).strip() if title else "?"
    if status != 200 or expected_title not in page:
        fail(f"POST {action} link: HTTP {status}, page {title!r}; expected {expected_title!r}")
    print(f"POST {action} link → HTTP {status}: {expected_title}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


def _post_sign_in(link: str, origin: str):
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(link, data=b"", method="POST", headers={
        "Origin": origin, "Sec-Fetch-Site": "same-origin",
        "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:  # a redirect not followed lands here too
        return error.code, error.headers


def cmd_console(link: str, operator: str) -> None:
    parts = urllib.parse.urlsplit(link)
    origin = f"{parts.scheme}://{parts.netloc}"
    with urllib.request.urlopen(link, timeout=30) as response:
        if response.headers.get_all("Set-Cookie"):
            fail("the GET of the console sign-in link set a cookie: a link previewer would sign in")
    status, headers = _post_sign_in(link, origin)
    cookies = headers.get_all("Set-Cookie") or []
    if status not in (302, 303) or not cookies:
        fail(f"POST console sign-in link: HTTP {status} with {len(cookies)} cookie(s); expected a redirect setting the session")
    cookie = "; ".join(c.split(";", 1)[0] for c in cookies)
    request = urllib.request.Request(f"{origin}/console/", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as response:
        page = html.unescape(response.read().decode("utf-8", "replace"))
    if operator not in page:
        fail(f"the console after sign-in does not name {operator!r}")
    again, _ = _post_sign_in(link, origin)
    if again != 410:
        fail(f"the console sign-in link worked twice (second POST: HTTP {again}, expected 410)")
    print(f"console-link: signed in once as {operator}; the link is then used up")


def cmd_truth_without(sim: str, tenant: str, mailbox: str, signal: str) -> None:
    key = forward_key(tenant, mailbox, signal, None)
    left = [e for e in get_json(f"{sim}/_sim/truth")
            if forward_key(e["tenant_id"], e.get("mailbox"), e["signal"], None) == key and e.get("targets")]
    if left:
        fail(f"the simulator still holds the forward: {left}")
    print(f"the simulator's truth no longer holds {signal} of {mailbox}")


# ---------------------------------------------------------------------------------------
# docker compose ps

ONE_SHOT = {"setup", "first-scan"}


def cmd_compose_ready(ps_json: str, *services: str) -> None:
    text = open(ps_json).read().strip()
    if text.startswith("["):
        containers = json.loads(text)
    else:
        containers = [json.loads(line) for line in text.splitlines() if line.strip()]
    waiting, healthy = [], []
    for service in services:
        mine = [c for c in containers if c.get("Service") == service]
        if not mine:
            waiting.append(f"{service}: no container yet")
        for c in mine:
            state, health, code = c.get("State"), c.get("Health") or "", c.get("ExitCode", 0)
            if service in ONE_SHOT:
                if state == "exited" and code == 0:
                    healthy.append(service)
                elif state == "exited":
                    fail(f"{service} exited with {code}")
                else:
                    waiting.append(f"{service}: {state}")
            elif state == "running" and health in ("healthy", ""):
                healthy.append(service)
            elif state in ("exited", "dead"):
                fail(f"{c.get('Name')} stopped ({state}, exit {code})")
            else:
                waiting.append(f"{c.get('Name')}: {state} {health}".strip())
    if waiting:
        print("waiting for " + ", ".join(waiting))
        sys.exit(3)
    counts = {s: healthy.count(s) for s in dict.fromkeys(healthy)}
    print("healthy: " + ", ".join(f"{s}×{n}" if n > 1 else s for s, n in counts.items()))


# ---------------------------------------------------------------------------------------
# RabbitMQ management API


def rabbit(path: str, payload=None, method: str | None = None):
    base = os.environ["SMOKE_RABBITMQ_URL"].rstrip("/")
    auth = base64.b64encode(f"{os.environ['SMOKE_RABBITMQ_USER']}:{os.environ['SMOKE_RABBITMQ_PASSWORD']}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
    data = json.dumps(payload).encode() if payload is not None else None
    return get_json(f"{base}/api/{path}", headers, data, method)


def peer_address(peer) -> str:
    """rabbitmqctl's peer_host: a string, or an Erlang address tuple as a JSON list
    (IPv4, or IPv6 — an IPv4-mapped ::ffff:a.b.c.d becomes a.b.c.d)."""
    if isinstance(peer, str):
        return peer.removeprefix("::ffff:")
    if len(peer) == 4:
        return ".".join(str(part) for part in peer)
    if len(peer) == 8 and peer[:6] == [0, 0, 0, 0, 0, 0xFFFF]:
        return f"{peer[6] >> 8}.{peer[6] & 0xFF}.{peer[7] >> 8}.{peer[7] & 0xFF}"
    return ":".join(f"{part:x}" for part in peer)


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def cmd_rabbit(sub: str, *args: str) -> None:
    if sub == "tap":
        queue, exchange, key = args
        rabbit(f"queues/%2f/{q(queue)}", {"durable": False, "auto_delete": False, "arguments": {}}, "PUT")
        rabbit(f"queues/%2f/{q(queue)}/contents", method="DELETE")
        rabbit(f"bindings/%2f/e/{q(exchange)}/q/{q(queue)}", {"routing_key": key}, "POST")
        print(f"queue {queue} receives {exchange} / {key}")
    elif sub == "busy-scanner":
        # Which scanner holds unacknowledged scan jobs right now: `rabbitmqctl
        # list_connections pid peer_host` and `list_channels connection
        # messages_unacknowledged` (JSON, separated by a line `@@`), read from the node
        # itself rather than the management API's statistics, which lag by seconds.
        listing, *ips = args
        connections_text, channels_text = open(listing).read().split("@@", 1)
        peers = {c["pid"]: peer_address(c["peer_host"]) for c in json.loads(connections_text)}
        for channel in json.loads(channels_text):
            peer = peers.get(channel.get("connection"))
            if peer in ips and int(channel.get("messages_unacknowledged", 0)) > 0:
                print(f"{peer} {channel['messages_unacknowledged']}")
                return
        sys.exit(3)  # none busy yet: the caller polls
    elif sub == "summaries":
        queue, run_id, count, timeout = args
        tenants: set[str] = set()
        other_runs = 0
        deadline = time.monotonic() + float(timeout)
        while len(tenants) < int(count):
            messages = rabbit(f"queues/%2f/{q(queue)}/get",
                              {"count": 500, "ackmode": "ack_requeue_false", "encoding": "auto"}, "POST")
            for message in messages:
                summary = json.loads(message["payload"])
                if summary.get("run_id") == run_id:
                    tenants.add(summary["tenant"]["id"] if isinstance(summary.get("tenant"), dict) else summary.get("tenant"))
                else:
                    other_runs += 1
            if len(tenants) >= int(count):
                break
            if time.monotonic() > deadline:
                fail(f"run {run_id}: summaries of {len(tenants)} of {count} tenants after {timeout}s")
            time.sleep(1)
        print(f"run {run_id}: a summary from each of the {len(tenants)} tenants")
    elif sub == "queue-idle":
        # Nothing waiting and nothing dead-lettered. Jobs being scanned (unacknowledged,
        # held by a live scanner) are fine: the continuous enumerator dispatches a
        # tenant every few seconds, so the queue is seldom empty for long.
        (queue,) = args
        info = rabbit(f"queues/%2f/{q(queue)}")
        dead = rabbit(f"queues/%2f/{q(queue + '.dead')}")
        if info.get("messages_ready", 0) or dead.get("messages", 0):
            fail(f"{queue}: {info.get('messages_ready')} message(s) waiting, {dead.get('messages')} dead-lettered")
        print(f"{queue}: nothing waiting ({info.get('messages_unacknowledged', 0)} being scanned), nothing dead-lettered")
    elif sub == "put-marker":
        queue, text = args
        rabbit(f"queues/%2f/{q(queue)}", {"durable": True, "auto_delete": False,
                                          "arguments": {"x-queue-type": "quorum"}}, "PUT")
        rabbit(f"queues/%2f/{q(queue)}/contents", method="DELETE")
        routed = rabbit("exchanges/%2f/amq.default/publish", {
            "properties": {"delivery_mode": 2}, "routing_key": queue, "payload": text, "payload_encoding": "string"}, "POST")
        if not routed.get("routed"):
            fail(f"the marker was not routed to {queue}")
        print(f"queued a persistent message on {queue}")
    elif sub == "get-marker":
        queue, text = args
        messages = rabbit(f"queues/%2f/{q(queue)}/get",
                          {"count": 10, "ackmode": "ack_requeue_false", "encoding": "auto"}, "POST")
        if [m["payload"] for m in messages] != [text]:
            fail(f"{queue}: expected the marker message, found {len(messages)} message(s)")
        print(f"the message queued on {queue} before `down` is still there")
    else:
        fail(f"unknown rabbit subcommand {sub}")


def main(argv: list[str]) -> None:
    table = {
        "alerts": cmd_alerts,
        "pick": cmd_pick,
        "act": cmd_act,
        "console": cmd_console,
        "truth-without": cmd_truth_without,
        "compose-ready": cmd_compose_ready,
        "rabbit": cmd_rabbit,
    }
    if not argv or argv[0] not in table:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        table[argv[0]](*argv[1:])
    except (urllib.error.URLError, OSError, KeyError, ValueError) as error:
        fail(f"{argv[0]}: {error!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
