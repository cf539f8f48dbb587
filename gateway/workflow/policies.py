"""Who triggered a referral, and what each platform policy then requires of the GP (D6327-4, L6327-1).

The law is a table here, not a chain of ifs: ``GP_STEPS[policy][trigger]`` says which Task the GP step creates,
whether the referral waits for it, and who owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.referral.facts import Trigger


class Policy(StrEnum):
    PTA_2016 = (
        "pta-2016"  # D6327-4: the GP, or a physician linked to them, triggers; anyone else needs the GP's validation
    )
    DAC_2022 = "dac-2022"  # L6327-1 (2022): any professional may ask, "in connection with the GP": the GP is informed


class TaskType(StrEnum):
    GP_VALIDATION = "gp-validation"
    GP_INFORMATION = "gp-information"
    PATIENT_INFORMATION = "patient-information"
    PLATFORM_INTAKE = "platform-intake"
    CONTACT_GP = "contact-gp"


class Owner(StrEnum):
    GP = "gp"
    PLATFORM = "platform"


@dataclass(frozen=True, slots=True)
class GpStep:
    task: TaskType | None
    owner: Owner | None = None
    blocks_routing: bool = False
    already_done: bool = False  # the Task is stored completed (validation declared by the requester)


_NOTHING = GpStep(None)
_INFORM_GP = GpStep(TaskType.GP_INFORMATION, Owner.GP)
_PLATFORM_CONTACTS_GP = GpStep(TaskType.CONTACT_GP, Owner.PLATFORM)
_VALIDATED = GpStep(TaskType.GP_VALIDATION, Owner.GP, already_done=True)

GP_STEPS: dict[Policy, dict[Trigger, GpStep]] = {
    Policy.PTA_2016: {
        Trigger.GP: _NOTHING,
        Trigger.LINKED_PHYSICIAN: _INFORM_GP,
        Trigger.GP_VALIDATED: _VALIDATED,
        Trigger.OTHER: GpStep(TaskType.GP_VALIDATION, Owner.GP, blocks_routing=True),
        Trigger.NO_GP: _PLATFORM_CONTACTS_GP,
    },
    Policy.DAC_2022: {
        Trigger.GP: _NOTHING,
        Trigger.LINKED_PHYSICIAN: _INFORM_GP,
        Trigger.GP_VALIDATED: _VALIDATED,
        Trigger.OTHER: _INFORM_GP,
        Trigger.NO_GP: _PLATFORM_CONTACTS_GP,
    },
}


def gp_step(policy: Policy, trigger: Trigger) -> GpStep:
    return GP_STEPS[policy][trigger]
