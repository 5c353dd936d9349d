from __future__ import annotations

from typing import Any

from django.db import models


class Lead(models.Model):
    name = models.CharField(max_length=200)
    email = models.CharField(max_length=200)
    company = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=40, default="new")

    class Meta:
        app_label = "crm"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.pk, "name": self.name, "email": self.email, "company": self.company,
                "status": self.status}


class Contact(models.Model):
    name = models.CharField(max_length=200)
    email = models.CharField(max_length=200)
    company = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        app_label = "crm"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.pk, "name": self.name, "email": self.email, "company": self.company}
