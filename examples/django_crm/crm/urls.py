from __future__ import annotations

import os

from django.urls import path

from crm import views

urlpatterns = [
    path("health", views.health),
    path("leads", views.leads),
    path("leads/<int:lead_id>", views.lead_detail),
    path("leads/<int:lead_id>/enrich", views.enrich_lead),
    path("contacts", views.contacts),
    path("enrich", views.enrich),
    path("fail", views.fail),
]

if os.environ.get("CRM_TEST_ENDPOINTS") == "1":
    urlpatterns.append(path("privacy-probe", views.privacy_probe))
