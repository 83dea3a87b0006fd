"""What the api tells clients about a workflow: its presets, the graph each runs on, its inputs."""

from __future__ import annotations

from vibewave.contracts.models import InputInfo, PresetInfo, WorkflowPresets
from vibewave.contracts.workflows import Workflow


def describe(workflow: Workflow) -> WorkflowPresets:
    definition = workflow.definition
    presets: list[PresetInfo] = []
    for name, preset in definition.presets.items():
        resolved = workflow.resolve_inputs({"prompt": "-", "seed": 0}, name)
        variant = workflow.variant_for(resolved)
        presets.append(
            PresetInfo(
                name=name,
                description=preset.description,
                inputs=dict(preset.inputs),
                variant=variant.name,
                graph=variant.description,
                expected_seconds=preset.expected_seconds,
                timeout_s=workflow.timeout_for(name),
            )
        )
    inputs = {
        name: InputInfo(
            type=spec.type,
            required=spec.required,
            default=spec.default,
            min=spec.min,
            max=spec.max,
            multiple_of=spec.multiple_of,
            offset=spec.offset or None,
            max_length=spec.max_length,
            random_default=spec.random_default,
        )
        for name, spec in definition.inputs.items()
    }
    return WorkflowPresets(
        workflow_name=definition.name,
        description=definition.description,
        default_preset=definition.default_preset,
        presets=presets,
        inputs=inputs,
        notes=definition.notes,
    )
