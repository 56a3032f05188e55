// Parse a Jenkinsfile with Groovy (the language of Jenkins' CPS engine) and check the declarative
// structure that a plain parse accepts but Jenkins rejects at run time:
//   - one top-level pipeline { } with agent and stages, and only the sections declarative allows;
//   - every stage('name') { } has exactly one of steps / parallel / stages / matrix, only allowed
//     sections, and a unique name; stages/parallel blocks hold only stage(...) calls;
//   - post { } holds only known conditions.
// Usage: groovy jenkinsfile_check.groovy Jenkinsfile   -> exit 0 (OK), 1 (structure), 2 (syntax)
import org.codehaus.groovy.ast.ASTNode
import org.codehaus.groovy.ast.builder.AstBuilder
import org.codehaus.groovy.ast.expr.ArgumentListExpression
import org.codehaus.groovy.ast.expr.ClosureExpression
import org.codehaus.groovy.ast.expr.ConstantExpression
import org.codehaus.groovy.ast.expr.GStringExpression
import org.codehaus.groovy.ast.expr.MethodCallExpression
import org.codehaus.groovy.ast.stmt.BlockStatement
import org.codehaus.groovy.ast.stmt.ExpressionStatement
import org.codehaus.groovy.control.CompilePhase

PIPELINE_SECTIONS = ['agent', 'environment', 'options', 'parameters', 'triggers', 'tools', 'stages', 'post', 'libraries'] as Set
STAGE_SECTIONS = ['agent', 'environment', 'options', 'when', 'input', 'tools', 'post', 'steps', 'parallel', 'stages', 'matrix', 'failFast'] as Set
STAGE_BODIES = ['steps', 'parallel', 'stages', 'matrix'] as Set
MATRIX_SECTIONS = ['axes', 'excludes', 'stages', 'agent', 'environment', 'options', 'when', 'input', 'tools', 'post'] as Set
POST_CONDITIONS = ['always', 'changed', 'fixed', 'regression', 'aborted', 'failure', 'success', 'unstable', 'unsuccessful', 'cleanup', 'notBuilt'] as Set

errors = []
stageNames = [] as Set

def err(ASTNode node, String msg) { errors << "line ${node?.lineNumber ?: '?'}: ${msg}" }

/** The closure given as the last argument of a call, or null. */
ClosureExpression closureOf(MethodCallExpression call) {
    def args = call.arguments
    if (args instanceof ArgumentListExpression && args.expressions && args.expressions[-1] instanceof ClosureExpression) {
        return (ClosureExpression) args.expressions[-1]
    }
    return null
}

/** The method calls that make up a declarative block; anything else in it is an error. */
List<MethodCallExpression> callsIn(ClosureExpression closure, String where) {
    def out = []
    def code = closure.code
    def statements = code instanceof BlockStatement ? code.statements : [code]
    statements.each { st ->
        if (st instanceof ExpressionStatement && st.expression instanceof MethodCallExpression
                && ((MethodCallExpression) st.expression).implicitThis) {
            out << (MethodCallExpression) st.expression
        } else {
            err(st, "only directives are allowed in ${where}, found ${st.class.simpleName}: ${st.text.take(60)}")
        }
    }
    return out
}

void checkSections(List<MethodCallExpression> calls, Set allowed, String where) {
    def seen = [] as Set
    calls.each { c ->
        def name = c.methodAsString
        if (!(name in allowed)) err(c, "unknown section '${name}' in ${where} (allowed: ${allowed.sort().join(', ')})")
        else if (!seen.add(name)) err(c, "section '${name}' given twice in ${where}")
    }
}

void checkPost(MethodCallExpression post, String where) {
    def body = closureOf(post)
    if (body == null) { err(post, "post in ${where} needs a block"); return }
    checkSections(callsIn(body, "post of ${where}"), POST_CONDITIONS, "post of ${where}")
}

void checkStages(MethodCallExpression stagesCall, String where) {
    def body = closureOf(stagesCall)
    if (body == null) { err(stagesCall, "${stagesCall.methodAsString} in ${where} needs a block"); return }
    def stages = callsIn(body, "${stagesCall.methodAsString} of ${where}")
    if (!stages) err(stagesCall, "${stagesCall.methodAsString} in ${where} has no stage")
    stages.each { s ->
        if (s.methodAsString != 'stage') { err(s, "only stage(...) is allowed in ${stagesCall.methodAsString} of ${where}, found '${s.methodAsString}'"); return }
        checkStage(s)
    }
}

void checkStage(MethodCallExpression stage) {
    def args = ((ArgumentListExpression) stage.arguments).expressions
    def nameExpr = args ? args[0] : null
    if (!(nameExpr instanceof ConstantExpression || nameExpr instanceof GStringExpression)) { err(stage, "stage needs a name: stage('Name') { ... }"); return }
    def name = nameExpr.text
    if (!stageNames.add(name)) err(stage, "duplicate stage name '${name}'")
    def body = closureOf(stage)
    if (body == null) { err(stage, "stage '${name}' needs a block"); return }
    def where = "stage '${name}'"
    def calls = callsIn(body, where)
    checkSections(calls, STAGE_SECTIONS, where)
    def bodies = calls.findAll { it.methodAsString in STAGE_BODIES }
    if (bodies.size() != 1) err(stage, "${where} must have exactly one of steps/parallel/stages/matrix, found ${bodies*.methodAsString ?: 'none'}")
    calls.each { c ->
        switch (c.methodAsString) {
            case 'stages': case 'parallel': checkStages(c, where); break
            case 'post': checkPost(c, where); break
            case 'steps': if (closureOf(c) == null) err(c, "steps in ${where} needs a block"); break
            case 'matrix':
                def m = closureOf(c)
                if (m == null) { err(c, "matrix in ${where} needs a block"); break }
                def mc = callsIn(m, "matrix of ${where}")
                checkSections(mc, MATRIX_SECTIONS, "matrix of ${where}")
                if (!mc.any { it.methodAsString == 'axes' } || !mc.any { it.methodAsString == 'stages' }) err(c, "matrix in ${where} needs axes and stages")
                mc.findAll { it.methodAsString == 'stages' }.each { checkStages(it, "matrix of ${where}") }
                break
        }
    }
}

if (args.length != 1) { System.err.println('usage: groovy jenkinsfile_check.groovy Jenkinsfile'); System.exit(64) }
def source = new File(args[0]).getText('UTF-8')
def nodes
try {
    nodes = new AstBuilder().buildFromString(CompilePhase.CONVERSION, false, source)
} catch (Throwable e) {
    System.err.println("SYNTAX ERROR in ${args[0]}: ${e.message}")
    System.exit(2)
}
def top = nodes.find { it instanceof BlockStatement }
def pipelines = top == null ? [] : top.statements.findAll {
    it instanceof ExpressionStatement && it.expression instanceof MethodCallExpression && it.expression.methodAsString == 'pipeline'
}*.expression
if (pipelines.size() != 1) {
    errors << "expected exactly one top-level pipeline { } block, found ${pipelines.size()}"
} else {
    def pipeline = closureOf(pipelines[0])
    if (pipeline == null) err(pipelines[0], 'pipeline needs a block')
    else {
        def calls = callsIn(pipeline, 'pipeline')
        checkSections(calls, PIPELINE_SECTIONS, 'pipeline')
        ['agent', 'stages'].each { req -> if (!calls.any { it.methodAsString == req }) err(pipelines[0], "pipeline has no '${req}' section") }
        calls.each { c ->
            if (c.methodAsString == 'stages') checkStages(c, 'pipeline')
            if (c.methodAsString == 'post') checkPost(c, 'pipeline')
        }
    }
}
if (errors) {
    errors.each { System.err.println("STRUCTURE ERROR in ${args[0]}: ${it}") }
    System.exit(1)
}
println "OK ${args[0]}: ${stageNames.size()} stages: ${stageNames.join(', ')}"
