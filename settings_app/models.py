"""Engine settings changed at run time (POST /settings). Documented names are typed in registry.py."""

from __future__ import annotations

from django.db import models


class Setting(models.Model):
    name = models.CharField(max_length=100, unique=True)
    value = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
