"""The Label Studio labelling interface and pre-annotations, built from the config.

Classification: a single choice of `data.labels`; generation: a text area for the corrected
output. Labels are arbitrary user strings: each goes into the XML through `quoteattr` (quotes,
`<`, `>` and `&` escaped), never pasted into the markup. The tag names the results refer to
(`text`, `label`, `output`) are fixed here, so no user string becomes an XML name.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

TEXT = "text"  # the Text tag (and the task data key holding the scrubbed text)
CHOICES = "label"  # classification: the Choices tag
TEXTAREA = "output"  # generation: the TextArea tag


def labelling_config(task: str, labels: list[str] | None) -> str:
    """The project's label config for `model.task` (`classification` needs the labels)."""
    head = [
        "<View>",
        '  <Header value="Selected because: $reason (model version $model_version)" size="6"/>',
        f'  <Text name="{TEXT}" value="${TEXT}"/>',
    ]
    if task == "classification":
        if not labels:
            raise ValueError("data.labels: required for a classification review queue")
        choices = "\n".join(f"    <Choice value={quoteattr(str(label))}/>" for label in labels)
        body = [
            f'  <Choices name="{CHOICES}" toName="{TEXT}" choice="single" showInline="true">',
            choices,
            "  </Choices>",
        ]
    elif task == "generation":
        body = [
            '  <Header value="Model output (edit it into the right answer):" size="6"/>',
            f'  <TextArea name="{TEXTAREA}" toName="{TEXT}" rows="5" editable="true" '
            'maxSubmissions="1"/>',
        ]
    else:
        raise ValueError(f"model.task: {task!r} has no review interface")
    return "\n".join([*head, *body, "</View>"])


def pre_annotation(task: str, output: str) -> list[dict]:
    """The model's answer as a Label Studio result (the prediction reviewers start from)."""
    if task == "classification":
        return [
            {
                "from_name": CHOICES,
                "to_name": TEXT,
                "type": "choices",
                "value": {"choices": [output]},
            }
        ]
    return [
        {"from_name": TEXTAREA, "to_name": TEXT, "type": "textarea", "value": {"text": [output]}}
    ]


def project_title(model_name: str, limit: int = 50) -> str:
    """`tunegate <model>`, cut to Label Studio's 50 characters (the description has the full
    name; the project id is also kept as a tag on the registered model)."""
    title = f"tunegate {model_name}"
    return title if len(title) <= limit else title[: limit - 1] + "…"
