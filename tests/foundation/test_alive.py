import pytest
from django.urls import resolve


@pytest.mark.django_db
def test_root_answers_alive_without_a_key(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"result": "alive"}
    assert resolve("/").url_name == "alive"


@pytest.mark.django_db
def test_admin_is_mounted(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b'<div id="site-name"><a href="/admin/">Task Engine</a></div>' in response.content
