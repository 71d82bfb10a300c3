package firewall

func oracleModel(rs Ruleset) *nftProgram { return buildRules(rs) }
