"""Intake: inbound referral bundles (transaction or message) → one referral, stored atomically."""

from gateway.intake.reading import read_referral
from gateway.intake.responses import message_response, transaction_response
from gateway.intake.service import IntakeOutcome, take_in
from gateway.referral.bundle import Referral

__all__ = [
    "IntakeOutcome",
    "Referral",
    "message_response",
    "read_referral",
    "take_in",
    "transaction_response",
]
