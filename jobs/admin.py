"""Operator admin for jobs, tasks and client workflow definitions ("job surgery", issue 7).

Jobs change only through the services (``job_update``, ``job_rerun``), so the admin cannot bypass the
state machine: a refused change is shown as an error message naming the job and the reason, never a
500. Client definitions are validated and saved by ``workflow_definition_save``, as any other caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from jobs.models import Job, Task, WorkflowDefinition
from jobs.services import job_rerun, job_update, workflow_definition_save, workflow_definition_validate
from logs.models import LogEntry
from taskengine_site.errors import DomainError
from taskengine_site.readonly import ReadOnlyAdminMixin

# A job page shows the tail of the log; a chatty job has thousands of progress lines, which would make
# the page slow and useless. The full log is one click away (the log entries admin, filtered by job).
LOG_INLINE_LIMIT = 100

# The admin's "View site" link: the site root is the API's alive check, the queue page is for people.
admin.site.site_url = "/queue/"


class TaskInline(admin.TabularInline[Task, Job]):
    model = Task
    extra = 0
    can_delete = False
    # One line per task, first on the page (templates/admin/jobs/job/change_form.html).
    template = "admin/jobs/job/tasks_inline.html"
    fields = (
        "id",
        "position",
        "name",
        "queue",
        "state",
        "attempts",
        "progress",
        "error",
        "worker",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # tasks are the engine's; shown, never edited


class LatestLogFormSet(BaseInlineFormSet[LogEntry, Job, forms.ModelForm[LogEntry]]):
    """The job's last ``LOG_INLINE_LIMIT`` entries, oldest first (a read-only window on the log)."""

    def get_queryset(self) -> QuerySet[LogEntry]:
        entries = super().get_queryset()
        # Filtering by the ids of the tail keeps the queryset unsliced, which formsets require.
        tail = list(entries.order_by("-id").values_list("pk", flat=True)[:LOG_INLINE_LIMIT])
        return entries.filter(pk__in=tail).order_by("id")


class LogEntryInline(admin.TabularInline[LogEntry, Job]):
    model = LogEntry
    formset = LatestLogFormSet
    extra = 0
    can_delete = False
    # One line per entry, each message once, the creation entry's headers folded.
    template = "admin/jobs/job/log_inline.html"
    ordering = ("id",)
    fields = ("id", "created_at", "severity", "progname", "task_id", "message", "visible")
    readonly_fields = fields
    verbose_name_plural = f"log (the last {LOG_INLINE_LIMIT} entries; the link above opens the full log)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # logs/services.job_log is the only writer


def _each(
    modeladmin: admin.ModelAdmin[Job],
    request: HttpRequest,
    queryset: QuerySet[Job],
    act: Callable[[Job], object],
) -> int:
    """Apply ``act`` to each selected job; a refusal is an error message naming the job, not a 500."""
    done = 0
    for job in queryset:
        try:
            act(job)
            done += 1
        except DomainError as exc:
            modeladmin.message_user(request, f"job {job.pk}: {exc.message}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{done} job(s) updated.", messages.SUCCESS)
    return done


class PriorityForm(forms.Form):
    """The intermediate page of the "set priority" action."""

    priority = forms.IntegerField(
        min_value=1, max_value=10, help_text="1 (most urgent) to 10; the default of a job is 5."
    )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = (
        "id",
        "client",
        "workflow",
        "priority",
        "queue_state",
        "failed",
        "top_of_queue",
        "persist",
        "run_at",
        "created_at",
    )
    list_display_links = ("id",)
    list_filter = ("queue_state", "failed", "client", "workflow", "priority", "persist")
    list_select_related = ("client",)
    search_fields = ("=id",)  # the real search is get_search_results: exact matches only, index-friendly
    search_help_text = "A job id, or a content id (parameters.content_id), matched exactly."
    ordering = ("-id",)
    # Counting a large jobs table on every page is the slow part of a changelist; the filtered count stays.
    show_full_result_count = False
    inlines = [TaskInline, LogEntryInline]
    actions = [
        "pause",
        "resume",
        "break_jobs",
        "rerun",
        "move_to_top",
        "set_priority",
        "persist",
        "unpersist",
    ]
    readonly_fields = [field.name for field in Job._meta.fields] + ["full_log"]
    # A few fields to a line; what an operator rarely needs is folded.
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("client", "workflow", "priority", "position", "top_of_queue"),
                    ("queue_state", "failed", "persist", "message"),
                    ("run_at", "created_at", "started_at", "finished_at"),
                    "parameters",
                    "full_log",
                ]
            },
        ),
        (
            "More",
            {
                "classes": ["collapse"],
                "fields": [
                    ("semaphore_url", "idempotency_key", "rerun_of"),
                    ("id", "workflow_uuid", "updated_at"),
                    "definition",
                ],
            },
        ),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the clean-up schedule deletes jobs; operators break them

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """Exact job id or exact ``parameters.content_id``: a substring scan of every job's JSON would be
        a sequential scan of the whole table; these two are an index lookup each."""
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(parameters__content_id=term)
        if term.isdigit() and len(term) <= 18:
            condition |= Q(pk=int(term)) | Q(parameters__content_id=int(term))
        return queryset.filter(condition), False

    @admin.display(description="log")
    def full_log(self, obj: Job) -> str:
        url = reverse("admin:logs_logentry_changelist") + f"?job__id__exact={obj.pk}"
        count = LogEntry.objects.filter(job_id=obj.pk).count()
        return format_html('<a href="{}">The full log ({} entries)</a>', url, count)

    @admin.action(description="Pause the selected jobs")
    def pause(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: job_update(job=job, changes={"queue_state": "paused"}))

    @admin.action(description="Resume the selected paused jobs")
    def resume(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: job_update(job=job, changes={"queue_state": "queued"}))

    @admin.action(description="Break the selected jobs")
    def break_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: job_update(job=job, changes={"queue_state": "broken"}))

    @admin.action(description="Rerun the selected jobs (the originals become broken)")
    def rerun(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: job_rerun(job=job))

    @admin.action(description="Move the selected jobs to the top of the queue")
    def move_to_top(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: job_update(job=job, changes={"top_of_queue": True}))

    @admin.action(description="Set the priority of the selected jobs…")
    def set_priority(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        """First call: a page asking for the priority. Its submit (``apply``) applies it to each job."""
        form = PriorityForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            priority = form.cleaned_data["priority"]
            _each(self, request, queryset, lambda job: job_update(job=job, changes={"priority": priority}))
            return None  # back to the changelist, which shows the messages
        context = {
            **self.admin_site.each_context(request),
            "title": "Set the priority of jobs",
            "opts": self.model._meta,
            "form": form,
            "jobs": list(queryset.select_related("client")[:1000]),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/jobs/job/set_priority.html", context)

    @admin.action(description="Keep the selected jobs (persist)")
    def persist(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: job_update(job=job, changes={"persist": True}))

    @admin.action(description="Let the clean-up delete the selected jobs (persist off)")
    def unpersist(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        _each(self, request, queryset, lambda job: job_update(job=job, changes={"persist": False}))


@admin.register(Task)
class TaskAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Task]):
    list_display = ("id", "job", "position", "name", "queue", "state", "attempts", "updated_at")
    list_filter = ("state", "queue", "name")
    search_fields = ("=id", "=job__id", "name")
    # Progress as people read it (at most one decimal), in the place of the stored value.
    exclude = ["progress"]
    readonly_fields = [
        "shown_progress" if field.name == "progress" else field.name for field in Task._meta.fields
    ]
    show_full_result_count = False

    @admin.display(description="progress")
    def shown_progress(self, obj: Task) -> str:
        return "-" if obj.shown_progress is None else f"{obj.shown_progress:g} %"


class WorkflowDefinitionForm(forms.ModelForm[WorkflowDefinition]):
    class Meta:
        model = WorkflowDefinition
        fields = ("client", "name", "steps")

    def clean_steps(self) -> list[dict[str, Any]]:
        try:
            # The service's own check, so a refused definition is refused here with its message.
            return workflow_definition_validate(steps=self.cleaned_data.get("steps"))
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(WorkflowDefinition)
class WorkflowDefinitionAdmin(admin.ModelAdmin[WorkflowDefinition]):
    form = WorkflowDefinitionForm
    list_display = ("client", "name", "updated_at")
    list_filter = ("client",)
    search_fields = ("name", "client__name")

    def save_model(self, request: HttpRequest, obj: WorkflowDefinition, form: Any, change: bool) -> None:
        workflow_definition_save(definition=obj, client=obj.client, name=obj.name, steps=obj.steps)
