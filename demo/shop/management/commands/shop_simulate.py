"""``manage.py shop_simulate --rate N``: a stream of realistic order changes.

Its changes reach the demo's pages as events through the channel layer, so it
refuses to run on the in-memory layer, where they would never leave this
process, unless told ``--allow-in-memory``.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from demo import layer
from demo.shop.models import STATUSES, Order

CUSTOMERS = [
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Katherine Johnson",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Margaret Hamilton",
]


class Command(BaseCommand):
    help = "Create, advance and delete orders at a steady rate, as a busy shop would."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=float, default=2.0, help="changes per second")
        parser.add_argument("--count", type=int, default=0, help="stop after this many")
        parser.add_argument("--seed", type=int, default=None, help="random seed")
        parser.add_argument(
            "--allow-in-memory",
            action="store_true",
            help="run on the in-memory channel layer too, where no server hears the changes",
        )

    def handle(
        self,
        *args: Any,
        rate: float,
        count: int,
        seed: int | None,
        allow_in_memory: bool,
        **options: Any,
    ) -> None:
        if rate <= 0:
            raise CommandError(f"--rate must be positive, got {rate}.")
        unheard = self.unheard()
        if unheard and not allow_in_memory:
            raise CommandError(
                f"{unheard}\nPass --allow-in-memory to make the changes anyway: pages show "
                "them only when reloaded."
            )
        if unheard:
            self.stderr.write(self.style.WARNING(f"{unheard}\nMaking the changes anyway."))
        rng = random.Random(seed)
        done = 0
        try:
            while not count or done < count:
                self.step(rng)
                done += 1
                time.sleep(1 / rate)
        except KeyboardInterrupt:
            pass
        self.stdout.write(f"{done} change(s) made.")

    def unheard(self) -> str:
        """Say why no server would hear this process's events, or return '' if one may."""
        hub_layer = layer.current()
        if not hub_layer.in_memory:
            return ""
        choice = hub_layer.choice
        why = f" ({choice.reason})" if choice else ""
        fix = choice.fix if choice else "Give the hub a Redis channel layer."
        return (
            f"This process is on the in-memory channel layer{why}: the events of the changes "
            "it makes would never leave it, so no page of the demo server would show them.\n"
            f"{fix} Then run shop_simulate again."
        )

    def step(self, rng: random.Random) -> None:
        """Make one change: mostly new orders and status moves, now and then a deletion."""
        open_orders = list(Order.objects.exclude(status=STATUSES[-1])[:50])
        roll = rng.random()
        with transaction.atomic():
            if roll < 0.4 or not open_orders:
                number = f"A-{rng.randrange(10000, 99999)}"
                while Order.objects.filter(number=number).exists():
                    number = f"A-{rng.randrange(10000, 99999)}"
                Order.objects.create(
                    number=number,
                    customer=rng.choice(CUSTOMERS),
                    total=Decimal(rng.randrange(500, 50000)) / 100,
                )
            elif roll < 0.9:
                order = rng.choice(open_orders)
                order.status = order.next_status() or order.status
                order.save()
            else:
                old = Order.objects.filter(status=STATUSES[-1]).order_by("updated_at").first()
                (old or rng.choice(open_orders)).delete()
