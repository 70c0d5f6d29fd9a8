"""Benefits: plan designs, coverage, prior authorisation, claim-line
adjudication with shared accumulators, and coordination of benefits
(METHODS §1.7–1.8; NAIC MDL-120 §§6–7; 42 CFR 411).

Modules: `design` (plan designs), `coverage` (members' coverage and the COB
facts), `order` (NAIC and Medicare Secondary Payer order rules, pure),
`secondary` (secondary payment methods, pure), `costshare` (deductible,
copay, coinsurance, OOP cap, pure), `accumulators` (their keys), `priorauth`,
`adjudicate`, `eligibility` (the real-time query).

Tx types (body → roles):

- `benefit_plan_register` {plan_id, kind?, cob_provision?, cob_method?,
  deductible_cents {individual, family}, oop_max_cents {individual, family},
  categories {name: {copay_cents?, coinsurance_bp?, deductible_applies?, prior_auth?}},
  buckets? [{bucket_id, categories, unit, limit, hard?, pool?}]} → payer
- `benefit_coverage_enroll` {member, plan_id, family_id, relationship, coverage_start,
  coverage_end?, subscriber_birthday (mmdd), subscriber_since?, employment, cobra?,
  employer_size?, medicare_reason?, esrd_coordination_start?, parents?, court_decree?,
  custody?} → payer (its own plan)
- `benefit_pa_request` {auth_id, member, payer, plan_id, category, units, from_date,
  to_date, urgency?} → provider
- `benefit_pa_decide` {auth_id, decision, reason, units?, valid_from?, valid_to?} → payer
- `benefit_adjudicate` {claim_id, line, member, plan_id, service_date, category, hcpcs,
  modifiers?, units, billed_cents, allowed_cents, rendering_npi, billing_npi,
  place_of_service, auth_id?} → payer

Keys (all under `benefits/`): `plan/<payer>/<plan>`, `coverage/<member>/<payer>/<plan>`,
`member/<member>` (authenticated list of [payer, plan]), `acc/<member>/<year>/<payer>/<plan>`,
`famacc/<payer>/<plan>/<family>/<year>`, `bucket/<member>/<year>/<payer>/<plan>/<bucket>`,
`pool/<member>/<year>/<pool>`, `pa/<payer>/<auth>`, `adj/<payer>/<claim>/<line>`,
`adjdup/<payer>/<plan>/<sha256>`, `adjlog/<member>` (authenticated list).
"""

from contracts.benefits import adjudicate, coverage, design, priorauth  # noqa: F401  (register handlers)
from contracts.benefits.eligibility import Eligibility, eligibility  # noqa: F401
