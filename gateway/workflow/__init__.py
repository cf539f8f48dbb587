"""Workflow: what happens to a referral once taken in (GP validation, patient information; DESIGN §3)."""

from gateway.workflow.intake import IntakePlan, plan_intake

__all__ = ["IntakePlan", "plan_intake"]
