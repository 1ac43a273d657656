"""Crew files: what ``crew run`` and ``crew plan`` load (YAML crews, Python crews), and the
declared inputs of a crew.

A YAML crew file::

    name: trip-planner                  # default: the file's name (its folder's, for crew.yaml)
    description: Plan a city trip.
    templates: [./my_templates]         # extra template folders, relative to this file
    inputs:                             # each {placeholder} must be declared here
      destination: {description: City to visit}           # type string, required
      days: {description: Length of the trip, type: integer, default: 3}
    llm: openai/gpt-4o-mini             # the crew's default model: a profile or litellm string
    max_concurrency: 8
    on_failure: fail_fast               # or continue
    agents:
      guide:                            # the key tasks name the agent by
        use: researcher                 # a role template; the fields below override it
        role: Local guide for {destination}
        goal: ...
        backstory: ...
        llm: fast                       # optional, like the crew's
        tools: [mypkg.tools:search]     # module:callable, imported from this file's folder
        max_iterations: 10
        board_tools: true
        allow_delegation: false         # delegate_work / ask_question to coworkers ...
        delegates: [planner]            # ... these agents (keys); default: every other one
    tasks:                              # keys are task ids; the order is the crew's order
      sights:
        description: List the sights of {destination}
        expected_output: 10 bullets
        agent: guide
      itinerary:
        use: plan_itinerary             # a task template ...
        with: {subject: "a {days}-day trip to {destination}"}   # ... and its parameters
        agent: guide
        depends_on: [sights]
        output_model:                   # an inline JSON schema, or "module:Class" (pydantic)
          type: object
          properties: {days: {type: array, items: {type: string}}}
        retries: 1
        timeout_s: 120
        estimate_s: 30                  # for the critical path only
        human_review: true              # a person approves, edits or rejects it first

Control flow (see ``crew.task`` and, for the expressions, ``crew.expr``)::

    tasks:
      triage:
        agent: analyst
        description: ...
        routes: {bug: [fix], question: answer}   # a router: route name -> task id(s)
      fix:
        agent: engineer
        description: ...
        when: "triage.data.severity == 'high'"   # run only if this holds, else skip
        join: any                       # all (default) | any | best_effort | quorum(2)
      expand:
        agent: writer
        description: "Expand {item}"    # {item} and {item_index}: one instance per item
        for_each: ideas.data.items
      research:
        crew: research/crew.yaml        # a subcrew (a file or folder relative to this file)
        inputs: {topic: pick_topic.text}   # its inputs: name -> expression; defaults fill the rest
      refine:
        loop:                           # tasks of this file, run as one body, round after round
          tasks: [draft, critique]      # (they are not top-level tasks)
          until: "critique.data.approved"
          max_rounds: 3
        depends_on: [brief]             # a loop also takes description, when, join, estimate_s

A hierarchical crew has no ``tasks:``: its manager plans them for the other agents::

    process: hierarchical               # default: graph (the tasks of the file)
    manager: lead                       # the key of the agent that plans
    goal: Write a report on {topic}

Input types: string, integer, number, boolean, list, object. An input with a default is
optional; ``{description: ...}`` can be written as just the description. A file without
``inputs:`` gets one required string input per placeholder. A ``null`` field clears the value
a template gave. Inside ``{...}`` (a YAML flow mapping) a value with a placeholder must be
quoted: ``{description: "About {topic}"}``.

``use:`` names a template from the ``templates:`` folders, then ``CREW_TEMPLATES_PATH``, then
the built-in library (``crew templates`` lists them; see ``crew.templates``). Agents that no
task uses still join the crew, as coworkers others can delegate to.

Loading is safe: nothing in the file runs except the ``module:callable`` references it names,
and reading is bounded (``crew.yamlfile``: size, nesting, aliases expanded; UTF-8 text, or
UTF-16/32 with a byte order mark). Every problem is reported with the file, the line and the
field, all at once, before any model call.
"""

from crew.inputs import InputSpec
from crew.spec.loader import load_crew_yaml
from crew.spec.models import CrewFile, LLMResolver
from crew.spec.python import load_python_crew

__all__ = ["CrewFile", "InputSpec", "LLMResolver", "load_crew_yaml", "load_python_crew"]
