"""The support desk: tickets, SLA clocks, escalation, diagnosis and the knowledge base."""
