"""Ship list prices (USD per million tokens) for common OpenAI models and the demo model.

Prices are editable in the admin; a new row with a later `valid_from` changes the price
from then on, and messages keep the cost they were stored with.
"""

from datetime import datetime, timezone
from decimal import Decimal

from django.db import migrations

VALID_FROM = datetime(2025, 1, 1, tzinfo=timezone.utc)

# model: (input, cached input, output)
PRICES = {
    "gpt-5": ("1.25", "0.125", "10.00"),
    "gpt-5-mini": ("0.25", "0.025", "2.00"),
    "gpt-5-nano": ("0.05", "0.005", "0.40"),
    "gpt-4.1": ("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
    "gpt-4.1-nano": ("0.10", "0.025", "0.40"),
    "gpt-4o": ("2.50", "1.25", "10.00"),
    "gpt-4o-mini": ("0.15", "0.075", "0.60"),
    "o3": ("2.00", "0.50", "8.00"),
    "o4-mini": ("1.10", "0.275", "4.40"),
    "o3-mini": ("1.10", "0.55", "4.40"),
    "offline-demo": ("0", "0", "0"),
}


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("chat", "ModelPrice")
    for model, (inp, cached, out) in PRICES.items():
        ModelPrice.objects.get_or_create(
            model=model,
            valid_from=VALID_FROM,
            defaults={
                "input_per_million": Decimal(inp),
                "cached_input_per_million": Decimal(cached),
                "output_per_million": Decimal(out),
            },
        )


def unseed(apps, schema_editor):
    ModelPrice = apps.get_model("chat", "ModelPrice")
    ModelPrice.objects.filter(model__in=PRICES, valid_from=VALID_FROM).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
