"""The CRM's JSON API. Nothing here knows about OpenTelemetry: tenants come from the X-Tenant-ID
header (or trusted baggage) through otel_crm, spans from the Django and requests
instrumentations, ORM spans and logs from otel_crm."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import requests
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from crm.local_services import local_services_url
from crm.models import Contact, Lead

log = logging.getLogger("crm")
_http = requests.Session()


def _services_url() -> str:
    return os.environ.get("CRM_SERVICES_URL") or local_services_url()


def _not_found(what: str) -> JsonResponse:
    return JsonResponse({"error": f"{what} not found"}, status=404)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_http_methods(["GET", "POST"])
def leads(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse([lead.to_dict() for lead in Lead.objects.order_by("id")[:100]], safe=False)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict) or not body.get("name") or not body.get("email"):
        return JsonResponse({"error": "name and email are required"}, status=400)
    lead = Lead.objects.create(name=body["name"], email=body["email"], company=body.get("company", ""))
    log.info("lead created", extra={"lead_id": lead.pk})
    return JsonResponse(lead.to_dict(), status=201)


@require_GET
def lead_detail(request: HttpRequest, lead_id: int) -> JsonResponse:
    lead = Lead.objects.filter(pk=lead_id).first()
    return JsonResponse(lead.to_dict()) if lead else _not_found("lead")


@require_GET
def contacts(request: HttpRequest) -> JsonResponse:
    query = Contact.objects.order_by("id")
    if request.GET.get("company"):
        query = query.filter(company=request.GET["company"])
    return JsonResponse([contact.to_dict() for contact in query[:100]], safe=False)


def _call_out(company: str) -> dict[str, Any]:
    """Another service of ours (baggage allowed) and, when configured, a third-party API (never)."""
    response = _http.get(f"{_services_url()}/enrich", params={"company": company}, timeout=5)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    partner = os.environ.get("CRM_PARTNER_URL")
    if partner:
        verified = _http.get(f"{partner.rstrip('/')}/verify", params={"company": company}, timeout=5)
        data["partner_status"] = verified.status_code
    return data


@require_POST
def enrich_lead(request: HttpRequest, lead_id: int) -> JsonResponse:
    lead = Lead.objects.filter(pk=lead_id).first()
    if lead is None:
        return _not_found("lead")
    data = _call_out(lead.company)
    lead.status = "enriched"
    lead.save(update_fields=["status"])
    log.info("lead enriched", extra={"lead_id": lead_id})
    return JsonResponse({"lead": lead.to_dict(), "enrichment": data})


@require_GET
def enrich(request: HttpRequest) -> JsonResponse:
    """This service as an enrichment API for others (e.g. the Flask example's CRM_SERVICES_URL)."""
    company = request.GET.get("company", "")
    known = Contact.objects.filter(company=company).count()
    data = _call_out(company)
    log.info("company enriched", extra={"company": company})
    return JsonResponse({"industry": data.get("industry", "unknown"), "contacts": known,
                         "baggage_seen": request.headers.get("baggage", "")})


@require_GET
def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the CRM backend failed on purpose")


@require_http_methods(["GET", "POST"])
def privacy_probe(request: HttpRequest) -> HttpResponse:
    """Test-only (CRM_TEST_ENDPOINTS=1): what careless application code does with secrets — log
    them, put them on the span, raise with them in the message. The privacy tests check that none
    of it leaves the process."""
    from opentelemetry import trace

    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = {}
    query = request.GET.dict()
    headers = {"authorization": request.headers.get("Authorization", ""),
               "api_key": request.headers.get("X-Api-Key", "")}
    log.info("signup from %s password=%s card %s phone %s", body.get("email"), body.get("password"),
             body.get("card"), body.get("phone"))
    log.warning("upstream said: %s", json.dumps({"password": body.get("password"),
                                                 "refresh_token": body.get("refresh_token")}))
    log.info("calling partner with Authorization: %s and %s", headers["authorization"], query)
    span = trace.get_current_span()
    span.set_attribute("crm.debug.authorization", headers["authorization"])
    span.set_attribute("crm.debug.api_key", headers["api_key"])
    span.set_attribute("crm.debug.note", f"card {body.get('card')} for {body.get('email')}")
    span.add_event("partner.request", {"url": f"https://partner.example/api?token={query.get('token')}"})
    raise ValueError(f"charge failed for card {body.get('card')} token={query.get('token')} "
                     f"key {headers['api_key']}")
