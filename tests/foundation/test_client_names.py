"""A client's name is a header value and the name of its storage area: one safe path component."""

from __future__ import annotations

import pytest

from clients.models import Client
from clients.services import client_create
from taskengine_site.errors import DomainError


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["acme", "ACME-2", "a.b_c", "9lives", "x" * 100])
def test_safe_names_are_accepted(name):
    client, key = client_create(name=name)
    assert Client.objects.get(pk=client.pk).name == name and key


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["", "..", ".hidden", "-flag", "a/b", "a\\b", "a b", "a\nb", "ü", "x" * 101])
def test_names_that_cannot_name_a_folder_are_refused(name):
    with pytest.raises(DomainError, match=r"client name must be 1\.\.100 letters"):
        client_create(name=name)
    assert not Client.objects.exists()
