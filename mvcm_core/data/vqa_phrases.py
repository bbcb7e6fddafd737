"""The words of the generated VQA questions: finding salience, noun phrases, places and templates.

:mod:`mvcm_core.data.vqa_gen` asks its questions with these; the app's suggested questions
(``demo.ask``) and teaching cases (``demo.teaching``) use the same phrases, so what a user is offered
is what the model was trained on.
"""

from __future__ import annotations

CLOSED_ANSWERS = ("yes", "no")

# most salient first: the answer to "what abnormality is present?"
SALIENCE: tuple[str, ...] = (
    "pneumothorax",
    "mass",
    "pleural effusion",
    "edema",
    "opacity",
    "cardiomegaly",
    "nodule",
    "atelectasis",
    "hiatal hernia",
    "fracture",
    "emphysema",
    "mediastinal widening",
    "hilar enlargement",
    "low lung volumes",
    "device",
    "pleural thickening",
    "increased markings",
    "diaphragm elevation",
    "scarring",
    "calcified granuloma",
    "aortic tortuosity",
    "scoliosis",
    "degenerative spine",
    "osteopenia",
)
# noun phrase used in questions, per canonical term
TERM_PHRASES: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "a pleural effusion",
    "pneumothorax": "a pneumothorax",
    "opacity": "a lung opacity",
    "atelectasis": "atelectasis",
    "nodule": "a lung nodule",
    "mass": "a mass",
    "calcified granuloma": "a calcified granuloma",
    "emphysema": "emphysema or hyperinflation",
    "edema": "pulmonary edema",
    "hiatal hernia": "a hiatal hernia",
    "scoliosis": "a spinal curvature",
    "fracture": "a fracture",
    "device": "a medical device",
    "degenerative spine": "degenerative change of the spine",
    "aortic tortuosity": "a tortuous or calcified aorta",
    "scarring": "lung scarring",
    "pleural thickening": "pleural thickening",
    "hilar enlargement": "hilar enlargement",
    "diaphragm elevation": "an elevated hemidiaphragm",
    "low lung volumes": "low lung volumes",
    "increased markings": "increased lung markings",
    "mediastinal widening": "a widened mediastinum",
    "osteopenia": "osteopenia",
}
# terms whose side is not a meaningful question (midline, diffuse or device-specific)
NO_SIDE_TERMS = frozenset(
    {
        "normal",
        "cardiomegaly",
        "device",
        "scoliosis",
        "degenerative spine",
        "aortic tortuosity",
        "hiatal hernia",
        "emphysema",
        "osteopenia",
        "low lung volumes",
    }
)
LATERAL_ZONES = frozenset({"retrocardiac", "posterior"})
SMALL = frozenset({"minimal", "small"})
VERTICAL_LEVEL = {
    "apex": "upper",
    "upper": "upper",
    "base": "lower",
    "lower": "lower",
    "costophrenic": "lower",
    "middle": "middle",
    "lingula": "middle",
}
ZONE_PHRASES = {
    "base": "base",
    "middle": "mid zone",
    "apex": "apex",
    "hilar": "hilum",
    "costophrenic": "costophrenic angle",
    "paratracheal": "paratracheal region",
    "posterior": "posterior chest",
    "anterior": "anterior chest",
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "presence": ("Is there {np}?", "Does this study show {np}?", "Can you see {np}?", "Is {np} present?"),
    "side_open": (
        "Which side is the {t} on?",
        "On which side is the {t}?",
        "Is the {t} left, right or bilateral?",
    ),
    "side_closed": ("Is the {t} on the {side}?", "Is there {np} on the {side} side?"),
    "location": ("Where is the {t}?", "Where is the {t} located?", "In which part of the chest is the {t}?"),
    "level": ("Is the {t} in the upper, middle or lower lung?", "At what level of the lung is the {t}?"),
    "severity": ("How severe is the {t}?", "What is the size or grade of the {t}?", "How large is the {t}?"),
    "normality": ("Is this study normal?", "Is this chest radiograph normal?", "Are there no abnormalities?"),
    "abnormality": (
        "What abnormality is present?",
        "What is the main finding?",
        "What is abnormal in this study?",
    ),
    "recess": (
        "Is there fluid in the posterior costophrenic recess?",
        "Is the posterior costophrenic recess blunted by fluid?",
    ),
    "retrocardiac": ("Is there a retrocardiac opacity?", "Is there an opacity behind the heart?"),
    "depth": ("Is the {t} anterior or posterior?", "Is the {t} in the front or the back of the lung?",
              "Does the {t} lie anteriorly or posteriorly?"),
    "localisation": ("Which lung is the {t} in, and is it anterior or posterior?",
                     "Where is the {t}: which side, front or back?",
                     "In which lung and in which half, front or back, does the {t} lie?"),
    "side_depth": ("Is the {t} in the {side} lung anterior or posterior?",
                   "Is the {side}-sided {t} in the front or the back of the lung?"),
}
DEPTH_MARGIN = 0.25  # |depth| (-1 front edge .. +1 back edge of the lung) below this is not asked
