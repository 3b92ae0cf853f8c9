"""Models used by the test suite."""

from __future__ import annotations

import uuid

from django.db import models

from channels_events import EventManager


class Customer(models.Model):
    name = models.CharField(max_length=100)
    api_key = models.CharField(max_length=64, blank=True)


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Order(models.Model):
    number = models.CharField(max_length=20)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.CASCADE)
    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    notes = models.JSONField(default=dict, blank=True)
    secret_note = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="orders")


class Ticket(models.Model):
    """A model whose primary key is set before the first save."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    title = models.CharField(max_length=100)


class Country(models.Model):
    """A model with a natural, caller-chosen primary key."""

    code = models.CharField(max_length=2, primary_key=True)
    name = models.CharField(max_length=100)
    area = models.FloatField(null=True, blank=True)


class Item(models.Model):
    """A model whose manager dispatches batched events for bulk operations."""

    name = models.CharField(max_length=50)
    quantity = models.IntegerField(default=0)

    objects = EventManager()


class Plain(models.Model):
    """A model nobody observes (the baseline in benchmarks)."""

    number = models.CharField(max_length=20)
    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)


class ApiToken(models.Model):
    """A model whose primary key is a secret."""

    token = models.CharField(max_length=64, primary_key=True)
    label = models.CharField(max_length=50, blank=True)


class Device(models.Model):
    """Holds secrets under innocent names, and innocent fields under names close to secret ones."""

    name = models.CharField(max_length=50)
    grant = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL)
    grants = models.ManyToManyField(ApiToken, blank=True, related_name="granted_devices")
    config = models.JSONField(default=dict, blank=True)
    pin = models.CharField(max_length=8, blank=True)
    shipping = models.CharField(max_length=50, blank=True)
    spinner = models.CharField(max_length=50, blank=True)
    footprint = models.IntegerField(default=0)
