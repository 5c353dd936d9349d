from __future__ import annotations

from typing import Any

from django.db import migrations, models


def seed_contacts(apps: Any, schema_editor: Any) -> None:
    contact = apps.get_model("crm", "Contact")
    contact.objects.bulk_create([
        contact(name=f"Contact {i}", email=f"contact{i}@example.com", company=company)
        for i, company in enumerate(["Acme", "Acme", "Globex", "Initech", "Umbrella"], start=1)
    ])


class Migration(migrations.Migration):
    initial = True
    dependencies: list[Any] = []
    operations = [
        migrations.CreateModel(
            name="Lead",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("name", models.CharField(max_length=200)),
                ("email", models.CharField(max_length=200)),
                ("company", models.CharField(blank=True, default="", max_length=200)),
                ("status", models.CharField(default="new", max_length=40)),
            ],
        ),
        migrations.CreateModel(
            name="Contact",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("name", models.CharField(max_length=200)),
                ("email", models.CharField(max_length=200)),
                ("company", models.CharField(blank=True, default="", max_length=200)),
            ],
        ),
        migrations.RunPython(seed_contacts, migrations.RunPython.noop),
    ]
