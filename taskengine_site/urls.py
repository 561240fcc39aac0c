"""URL configuration. The API paths are the original's (reference: task-engine-api.md), without slashes."""

from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularJSONAPIView

from jobs.api.submit import job_submit_view
from jobs.api.views import DashboardView, JobViewSet
from logs.api.views import JobLogView
from media.api.views import JobKeysView
from monitoring.metrics import metrics_view
from monitoring.views import HealthView, queue_data, queue_page
from scheduling.api.views import SchedulerView, SchedulesView
from settings_app.api.views import SettingsView
from taskengine_site.views import AliveView, DocsView

# The admin's names (its pages, the login, the browser's title bar); its icon is in templates/admin.
admin.site.site_header = "Task Engine"
admin.site.site_title = "Task Engine admin"
admin.site.index_title = "Operations"

urlpatterns = [
    path("", AliveView.as_view(), name="alive"),
    path("health", HealthView.as_view(), name="health"),
    path("dashboard", DashboardView.as_view(), name="dashboard"),
    # JobViewSet.create, with the usual requests answered without DRF's machinery (jobs/api/submit.py).
    path("job", job_submit_view, name="job-submit"),
    path("jobs", JobViewSet.as_view({"get": "list", "post": "create_batch"}), name="job-list"),
    path(
        "jobs/<int:pk>",
        JobViewSet.as_view({"get": "retrieve", "put": "update", "patch": "partial_update"}),
        name="job-detail",
    ),
    path("jobs/<int:pk>/rerun", JobViewSet.as_view({"post": "rerun"}), name="job-rerun"),
    path("jobs/<int:pk>/keys", JobKeysView.as_view(), name="job-keys"),
    path("logs/<int:pk>", JobLogView.as_view(), name="job-logs"),
    path("schedules", SchedulesView.as_view(), name="schedules"),
    path("scheduler", SchedulerView.as_view(), name="scheduler"),
    path("settings", SettingsView.as_view(), name="settings"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", DocsView.as_view(url_name="openapi"), name="docs"),
    path("admin/", admin.site.urls),
    # Operators' console (staff login) and monitoring (issue 7).
    path("queue/", queue_page, name="queue"),
    path("queue/data", queue_data, name="queue-data"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "taskengine_site.views.bad_request"
handler403 = "taskengine_site.views.forbidden"
handler404 = "taskengine_site.views.not_found"
handler500 = "taskengine_site.views.server_error"
