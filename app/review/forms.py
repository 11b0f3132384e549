"""Forms of the review workflow (CSRF-protected)."""

from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, PasswordField, RadioField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange

from app.review.models import SignatureMeaning
from app.study.fieldtypes import select_choices


class SignForm(FlaskForm):
    meaning = RadioField("Meaning of your signature", validators=[DataRequired("Choose what your signature means.")],
                         choices=select_choices((m.value, m.label) for m in SignatureMeaning))
    password = PasswordField("Your password", validators=[DataRequired("Re-enter your password to sign.")],
                             render_kw={"autocomplete": "current-password"})


class ReasonForm(FlaskForm):
    reason = StringField("Reason", validators=[DataRequired("Give a reason."), Length(max=2000)])


class RaiseQueryForm(FlaskForm):
    instrument = HiddenField(validators=[DataRequired()])
    instance = IntegerField(validators=[NumberRange(min=1)], default=1)
    field = StringField("Field", validators=[DataRequired("Choose the field the query is about.")])
    text = TextAreaField("Query", validators=[DataRequired("Say what should be checked."), Length(max=4000)],
                         render_kw={"rows": 2})


class QueryStepForm(FlaskForm):
    text = TextAreaField("Message", validators=[Length(max=4000)], render_kw={"rows": 2})
