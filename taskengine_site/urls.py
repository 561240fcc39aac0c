"""URL configuration. The API paths are the original's (reference: task-engine-api.md), without slashes."""

from django.contrib import admin
from django.urls import path

from taskengine_site.views import AliveView

urlpatterns = [
    path("", AliveView.as_view(), name="alive"),
    path("admin/", admin.site.urls),
]
